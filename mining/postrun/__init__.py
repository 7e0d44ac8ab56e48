"""Tools that work on a mining output once it exists (or while it is being written): stats, report, curate,
export, validate."""
