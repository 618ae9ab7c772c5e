"""Operations: Prometheus metrics, structured logs, health that follows the database."""
