//! RPC: a client process calling a server process.
//!
//! The client (the process you start) starts the server (this program again, `--role
//! server`), which creates [`RpcServer`] `rpc-rs-<pid>`; the client connects by name
//! ([`RpcClient::connect`] waits for the server to appear). A request is one message
//! and so is its reply, whatever their size. Requests here are bytes `METHOD:ARGUMENT`,
//! or a float64 array (the server replies with its sum):
//!
//! - `echo:...`: the argument back; 64-byte echoes measure the round trip.
//! - `set_voltage:V`: a computed reply, or for |V| > 10 an error reply
//!   ([`RpcServer::reply_error`]) that the client's call returns as [`Error::Remote`]
//!   (kind `ValueError`), after which the server goes on serving.
//! - `measure:MS`: runs for MS milliseconds and says how many times it ran. The client
//!   calls it with a shorter timeout ([`Error::Timeout`]), then [`RpcClient::retry`]:
//!   the server runs the call at most once, and the retry gets that run's reply.
//! - `dataset:N`: N float64 values as one reply (8 MB for N = 1,000,000), streamed
//!   through the client's reply channel in chunks.
//! - `stop`: the server replies and exits.
//!
//! Run: `cargo run --release -p shmplane --example rpc [-- --quick]`
//! (default 20,000 timed echoes; `--quick`: 1,000).
//!
//! Prints each call and its reply, the round trip of the 64-byte echoes (p50 and p99,
//! measured, never checked), the large reply's size and time, and `rpc: ok`. Exits 1
//! with a message if a reply is wrong, a call runs twice, or an error does not come
//! back as one; every call has a timeout and each process a watchdog. The server's
//! segments and the client's reply channel are removed when the processes close them.

mod support;

use shmplane::frame::{ArrayMeta, Element, Order, Outgoing};
use shmplane::{Error, Frame, RpcClient, RpcServer, Wait};
use std::time::{Duration, Instant};
use support::{checksum, ensure, fail, quantile, Args, Context, Peer, Result};

/// How long any one call, or the server's wait for one, may take.
const TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    support::main("rpc", "client", &[], |args| match args.role.as_deref() {
        None => client(args),
        Some("server") => server(args),
        Some(other) => fail(format!("unknown role {other:?}")),
    });
}

/// The watchdog's limit in seconds: (with `--quick`, without).
const WATCHDOG: (u64, u64) = (90, 300);

/// The values of `dataset:N`.
fn dataset(n: usize) -> Vec<f64> {
    (0..n).map(|i| (i as f64).sqrt()).collect()
}

fn server(args: &Args) -> Result<()> {
    args.watchdog("rpc server", WATCHDOG);
    let name: String = args.value(0, "server name")?;
    let mut server = RpcServer::create(&name, 4).context(format!("creating RPC server {name}"))?;
    println!("server (pid {}): serving {name}", std::process::id());
    let (mut calls, mut measured) = (0u64, 0u64);
    loop {
        let (call, request) = server.recv_frame(Wait::timeout(TIMEOUT)).context("waiting for a call")?;
        calls += 1;
        let request = match request {
            Frame::Bytes(b) => b,
            Frame::Array(a) => {
                // An array request: reply with its sum and length.
                match a.to_vec::<f64>() {
                    Ok(v) => server.reply(call, format!("sum {} of {} values", v.iter().sum::<f64>(), v.len()).as_bytes()),
                    Err(e) => server.reply_error(call, "TypeError", &e, ""),
                }
                .context("replying to an array request")?;
                continue;
            }
            other => {
                server.reply_error(call, "TypeError", &format!("requests are bytes or arrays, not {other:?}"), "").context("replying")?;
                continue;
            }
        };
        let text = String::from_utf8_lossy(&request);
        let (method, argument) = text.split_once(':').unwrap_or((&text, ""));
        let delivered = match method {
            "echo" => server.reply(call, argument.as_bytes()),
            "set_voltage" => match argument.parse::<f64>() {
                Ok(v) if (-10.0..=10.0).contains(&v) => server.reply(call, format!("voltage set to {v} V").as_bytes()),
                Ok(v) => server.reply_error(call, "ValueError", &format!("{v} V is outside the +-10 V range"), ""),
                Err(e) => server.reply_error(call, "ValueError", &format!("voltage {argument:?}: {e}"), ""),
            },
            "measure" => match argument.parse::<u64>() {
                Ok(ms) if ms <= 5_000 => {
                    std::thread::sleep(Duration::from_millis(ms));
                    measured += 1;
                    server.reply(call, format!("measured for {ms} ms (run {measured})").as_bytes())
                }
                _ => server.reply_error(call, "ValueError", &format!("measuring time {argument:?}: 0 to 5000 ms"), ""),
            },
            "dataset" => match argument.parse::<usize>() {
                Ok(n) if n <= 1 << 24 => {
                    let values = dataset(n);
                    let meta = ArrayMeta::new(f64::DESCR, &[n], Order::C).context("describing the dataset")?;
                    let reply = Outgoing::array(&meta, bytemuck::cast_slice(&values)).context("laying out the dataset")?;
                    server.reply_with(call, reply, true, Wait::timeout(TIMEOUT))
                }
                _ => server.reply_error(call, "ValueError", &format!("dataset size {argument:?}: 0 to 16777216"), ""),
            },
            "stop" => {
                server.reply(call, b"bye").context("replying to stop")?;
                break;
            }
            _ => server.reply_error(call, "UnknownMethod", &format!("no method {method:?}"), ""),
        }
        .context(format!("replying to {method}"))?;
        if !delivered {
            println!("server: the client of call {} has gone; its reply was dropped", call.seq);
        }
    }
    println!("server: served {calls} calls, ran `measure` {measured} time(s), dropped {} duplicate request(s)", server.duplicates());
    server.close();
    Ok(())
}

/// Call with bytes `request`; the reply as text.
fn call(client: &mut RpcClient, request: &str) -> Result<String> {
    let reply = client.call_timeout(request.as_bytes(), TIMEOUT).context(format!("calling {request:?}"))?;
    String::from_utf8(reply).context(format!("the reply to {request:?}"))
}

fn client(args: &Args) -> Result<()> {
    args.watchdog("rpc client", WATCHDOG);
    let name = format!("rpc-rs-{}", std::process::id());
    let mut server = Peer::spawn(args, "server", &[&name])?;
    let mut client = RpcClient::connect(&name, Some(TIMEOUT)).context(format!("connecting to {name}"))?;
    println!("client: connected to {name} (server pid {})", server.pid());
    if let Err(e) = calls(args, &mut client) {
        // End the server before this handle closes: the close then finds it gone and
        // removes its segment (closed first, with the server alive and then killed,
        // the segment would be left for `shmplane gc`).
        server.kill();
        return Err(e);
    }
    server.wait(TIMEOUT)?;
    client.close();
    println!("rpc: ok");
    Ok(())
}

/// The client's calls, the last one `stop`.
fn calls(args: &Args, client: &mut RpcClient) -> Result<()> {
    println!("client: echo:hello -> {:?}", call(client, "echo:hello")?);
    println!("client: set_voltage:1.5 -> {:?}", call(client, "set_voltage:1.5")?);

    // An error raised by the server comes back as the call's error.
    match client.call_timeout(b"set_voltage:99", TIMEOUT) {
        Err(Error::Remote { kind, message, .. }) => println!("client: set_voltage:99 -> remote error {kind}: {message}"),
        Ok(reply) => return fail(format!("set_voltage:99 succeeded: {:?}", String::from_utf8_lossy(&reply))),
        Err(e) => return fail(format!("set_voltage:99 failed another way: {e}")),
    }

    // A call that takes longer than its timeout, then its retry: run once.
    let request = if args.quick { "measure:200" } else { "measure:500" };
    match client.call_timeout(request.as_bytes(), Duration::from_millis(50)) {
        Err(Error::Timeout) => println!("client: {request} with a 50 ms timeout -> timed out; retrying"),
        other => return fail(format!("{request} with a 50 ms timeout should time out, got {other:?}")),
    }
    let reply = client.retry(request.as_bytes(), Some(TIMEOUT)).context(format!("retrying {request}"))?;
    let reply = String::from_utf8(reply).context("the reply to the retry")?;
    ensure(reply.ends_with("(run 1)"), || format!("the retry should get the first run's reply, got {reply:?}"))?;
    println!("client: retry -> {reply:?}: the server ran it once");

    // An array request: the server computes its sum.
    let values: Vec<f64> = (1..=100).map(f64::from).collect();
    let meta = ArrayMeta::new(f64::DESCR, &[values.len()], Order::C).context("describing the request array")?;
    let request = Outgoing::array(&meta, bytemuck::cast_slice(&values)).context("laying out the request array")?;
    match client.call_with(request, false, Wait::timeout(TIMEOUT)).context("calling with an array")? {
        Frame::Bytes(b) => println!("client: array 1.0..=100.0 -> {:?}", String::from_utf8_lossy(&b)),
        other => return fail(format!("the array call's reply is not bytes: {other:?}")),
    }

    // Round trips of 64-byte calls.
    let calls = if args.quick { 1_000 } else { 20_000 };
    let request = format!("echo:{}", "x".repeat(64 - 5));
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let reply = client.call_timeout(request.as_bytes(), TIMEOUT).context("a 64-byte echo")?;
        times.push(t.elapsed());
        ensure(reply.len() == 59, || format!("echo returned {} bytes, sent 59", reply.len()))?;
    }
    times.sort();
    println!(
        "client: round trip of {calls} 64-byte calls: p50 {:.1} us, p99 {:.1} us{}",
        quantile(&times, 0.5).as_secs_f64() * 1e6,
        quantile(&times, 0.99).as_secs_f64() * 1e6,
        support::build_note()
    );

    // One large reply: 8 MB (1 MiB with --quick), one message.
    let n = if args.quick { 1 << 17 } else { 1_000_000 };
    let t = Instant::now();
    let frame = client.call_with(Outgoing::bytes(format!("dataset:{n}").as_bytes()), false, Wait::timeout(TIMEOUT)).context("calling dataset")?;
    let took = t.elapsed();
    let Frame::Array(a) = frame else { return fail("the dataset reply is not an array") };
    let got = a.to_vec::<f64>().context("the dataset reply")?;
    let expected = dataset(n);
    ensure(checksum(bytemuck::cast_slice(&got)) == checksum(bytemuck::cast_slice(&expected)), || {
        format!("the dataset reply ({} values) differs from what the server computes", got.len())
    })?;
    println!(
        "client: dataset:{n} -> one reply, {:?} {}, {:.1} MB in {:.1} ms, checksum matches",
        a.meta.shape,
        a.meta.descr,
        a.data.len() as f64 / 1e6,
        took.as_secs_f64() * 1e3
    );

    println!("client: stop -> {:?}", call(client, "stop")?);
    Ok(())
}
