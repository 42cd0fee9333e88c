"""Production on Vertex AI: the one client module every cloud call goes through
(`client.py`), the VertexPusher (`push.py`), the ExperimentLogger (`experiments.py`), the
Trainer whose job logs to Vertex TensorBoard (`training.py`) and the console views of the
reports (`report_view.py`)."""
