"""Corpus preparation (LJSpeech, VCTK, folder), features and datasets."""
