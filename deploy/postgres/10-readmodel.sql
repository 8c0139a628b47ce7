-- Runs once, when the PostgreSQL volume is initialised: the projectors keep
-- their read models (and tracking positions) in a database of their own.
CREATE DATABASE esflow_readmodel OWNER esflow;
