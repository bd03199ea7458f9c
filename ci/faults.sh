#!/usr/bin/env bash
# The fault matrix: SIGKILL of every role of every primitive at random points, many
# times (SHMPLANE_KILL_ROUNDS kill points per role, default 200; the normal test run
# takes a bounded sample of the same tests). Each kill is checked by the test: every
# message committed before it is delivered once, in order, intact; the survivor learns
# of the death (PeerDead / Truncated / Disconnected) instead of hanging; a new process
# takes the role over and goes on.
#   channel sender    copies.rs   sender_killed_mid_message_truncates_only_that_message
#   channel receiver  copies.rs   receiver_killed_mid_message_leaves_its_successor_the_next_message
#   slot writer       slots.rs    writer_killed_mid_stream_leaves_last_complete_value
#   mailbox producer  mailbox_processes.rs  producer_killed_mid_stream_strands_nothing
#   mailbox consumer  mailbox_processes.rs  consumer_killed_then_replaced
#   broadcast publisher   broadcast_processes.rs  publisher_killed_mid_stream_and_replaced
#   broadcast subscriber  broadcast_processes.rs  subscribers_killed_mid_stream_do_not_hold_the_publisher
#                         (lossless and lossy; reading and idle subscribers)
#   RPC server        rpc.rs  servers_killed_at_random_points_fail_calls_and_are_replaced
#   RPC client        rpc.rs  clients_killed_at_random_points_strand_nothing
# Usage: ci/faults.sh            SHMPLANE_KILL_ROUNDS=20 ci/faults.sh (quicker)
set -euo pipefail
cd "$(dirname "$0")/.."
export SHMPLANE_KILL_ROUNDS="${SHMPLANE_KILL_ROUNDS:-200}"
echo "fault matrix: $SHMPLANE_KILL_ROUNDS kill points per role"
run() {
  local test=$1; shift
  local start=$SECONDS
  cargo test --release -q -p shmplane --test "$test" -- --exact --test-threads=1 "$@" 2>&1 | grep -E 'test result|panicked|FAILED' | sed "s/^/  $test: /"
  echo "  $test: $((SECONDS - start)) s"
}
run copies sender_killed_mid_message_truncates_only_that_message receiver_killed_mid_message_leaves_its_successor_the_next_message
run slots writer_killed_mid_stream_leaves_last_complete_value
run mailbox_processes producer_killed_mid_stream_strands_nothing consumer_killed_then_replaced
run broadcast_processes publisher_killed_mid_stream_and_replaced subscribers_killed_mid_stream_do_not_hold_the_publisher
run rpc servers_killed_at_random_points_fail_calls_and_are_replaced clients_killed_at_random_points_strand_nothing
echo "fault matrix: passed"
