"""The inference engine: checkpoint in, labels and confidence out, no ROS."""
