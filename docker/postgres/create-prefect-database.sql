-- One PostgreSQL for the platform: POSTGRES_DB creates MLflow's database, this Prefect's.
-- Runs once, when the data volume is initialised.
CREATE DATABASE prefect;
