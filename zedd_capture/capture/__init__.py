"""A capture session: rig plan -> steps, resumable, writes scenes/<scene>/raw/."""
