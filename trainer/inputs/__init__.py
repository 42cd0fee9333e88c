"""From tf.Examples (on disk, or serialized at serving time) to model inputs."""
