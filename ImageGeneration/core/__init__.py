"""Code shared by the DDPM and DiT unlearning pipelines: diffusion losses, the
forget/remain update loop, sampling and image metrics."""
