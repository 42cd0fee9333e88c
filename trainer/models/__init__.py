"""The models the Trainer builds, and how a trained model is exported."""
