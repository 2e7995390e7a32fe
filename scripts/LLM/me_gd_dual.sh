#!/usr/bin/env bash
# ME+GD with DualOptim (dual_adam, alternating, retain_freq 5, forget_coeff 1.0 as the original's
# scripts/tofu/dualoptim.sh); OPTIM_CFG=adam for the single-state comparison.  Environment as in
# dualoptim.sh / common.sh.
FORGET_LOSSES="ME+GD" exec bash "$(dirname "${BASH_SOURCE[0]}")/dualoptim.sh"
