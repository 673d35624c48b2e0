"""Many objects at once: files collected from folders, a pool of processes, progress."""
