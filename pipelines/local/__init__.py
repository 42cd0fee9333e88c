"""A run on this machine (local and Beam runners): its flags, the run lock, the console, the
full log and the summary read back from ML Metadata."""
