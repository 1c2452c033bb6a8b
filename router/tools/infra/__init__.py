"""Local infrastructure on loopback: Kafka (KRaft), Mosquitto and Prometheus as plain processes."""
