"""Class unlearning for a class-conditional DDPM (CIFAR-10, or scikit-learn digits on CPU)."""
