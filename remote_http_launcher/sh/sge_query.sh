# sge_query JOB: the job's line of `qstat` ("rhl-list LINE": id, priority, name, owner, state, date, time,
# queue@host when running), "rhl-now" and the login node's local time as qstat prints times, for a running
# job without its own h_rt "rhl-queue-h_rt" and its queue's limit, then `qstat -j JOB` (resource requests,
# scheduling info: why it waits, error reasons); "GONE" when Grid Engine no longer knows it. qstat (and qconf,
# if there is one) is found as rhl_use finds it.
rhl_use qstat
qstat=$rhl_command
detail=$("$qstat" -j "$1" 2>&1)
case $detail in
  *"do not exist"*) echo GONE; exit 0 ;;
  *job_number:*) ;;
  *) printf '%s\n' "$detail" >&2; exit 1 ;;
esac
list=$("$qstat" -u "$(id -un)" 2>/dev/null | awk -v id="$1" '$1 == id' | head -n 1)
printf 'rhl-list %s\n' "$list"
printf 'rhl-now %s\n' "$(date '+%m/%d/%Y %H:%M:%S')"
case $detail in
  *"hard resource_list:"*"h_rt="*) ;;
  *) queue=$(printf '%s\n' "$list" | awk '{print $8}')
     case $queue in
       *@*) rhl_command qconf && printf 'rhl-queue-h_rt %s\n' \
              "$("$rhl_command" -sq "${queue%@*}" 2>/dev/null | awk '$1 == "h_rt" {print $2}')" ;;
     esac ;;
esac
printf '%s\n' "$detail"
exit 0
