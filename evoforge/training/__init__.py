"""Training: fine-tuning data from the archive, driving the trainer, and evaluating a tuned model against the champion."""
