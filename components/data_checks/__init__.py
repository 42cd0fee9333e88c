"""Data checks: the checked ImportExampleGen, the record check and the validation gate."""
