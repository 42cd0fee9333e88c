"""Release: the Evaluator's baseline resolver and the all-or-nothing Pusher."""
