DROP TABLE hooksync_runs;
