"""The original's name of ``main_forget.py``: its scripts' lines run as they are, e.g.

    torchrun --nproc_per_node=2 forget.py --config-name=phi1-5_tofu.yaml task_id=1 forget_loss=ME+GD lr=1e-5 ...
"""
from LLM.main_forget import main

if __name__ == "__main__":
    main()
