"""The digital twin: procedural scenes, thin-lens camera, breathing, focus motor, OS0-128 lidar, trajectories."""
