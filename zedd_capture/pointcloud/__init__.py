"""Point-cloud pipeline: read, deskew, aggregate + density filter, cleanup, register, project."""
