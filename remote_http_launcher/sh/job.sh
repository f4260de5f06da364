# job CONDA_SH UMASK WORKDIR STATUS COMMAND CONDA_ENV FIRST EXEC HEAD JOB_ID SERVICE RESTARTS PORTS SETUP: a batch
# job's script after its first line (schedulers.job_script), which sets these: CONDA_SH and UMASK come from the
# submission (rhl_submit), the rest is the launch's, JOB_ID and RESTARTS (which run of the job this is) the
# scheduler's. Enters WORKDIR and becomes the program SERVICE (service.sh), so the job's process is the service
# and cancelling the job ends it; it chooses the PORTS here, on the compute node. A requeued job runs this again,
# on its new node: a new record. SETUP: the setup lines, which the service runs (service.sh).
cd -- "$3" || exit "$rhl_exit_workdir"
node=$(hostname)
# The service reads the record's head on stdin, here as in launch.sh.
exec sh -c "${11}" rhl-service "$4" "$5" "$1" "$6" "$2" '' '' "$7" "$8" "${10}" "$node" "${12}" "${13-}" "${14-}" <<RHL_RECORD
$9
RHL_RECORD
