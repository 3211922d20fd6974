"""The logic of a predict run, Lightning-free: its frame ranges, its manifest and its output-folder lock."""
