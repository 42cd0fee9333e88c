"""The training run around Keras's fit: per-epoch history, resume after preemption, and the
multi-worker loop."""
