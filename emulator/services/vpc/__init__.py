"""IBM Cloud VPC (images, operating systems, instance profiles, VPCs, subnets, instances)."""
