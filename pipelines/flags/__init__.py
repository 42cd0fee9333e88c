"""The flags every runner shares, and the settings objects they become."""
