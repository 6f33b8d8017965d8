//! UDP prober for `netns-lab/bench.sh failover`: ping backs off to ~10 ms steps once replies
//! stop, which is as long as the 10 ms failover being measured. This sends at a fixed pace.
//!
//!   probe echo PORT                      echo every datagram back (run on the server)
//!   probe send ADDR:PORT INTERVAL_US SECS   send a numbered datagram every INTERVAL_US for SECS
//!                                        and print the longest gap between echoes, in ms,
//!                                        and the gap's end as Unix time
//!
//! Not part of vrrpd; std only.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["echo", port] => echo(port),
        ["send", target, interval, secs] => send(target, interval, secs),
        _ => Err("usage: probe echo PORT | probe send ADDR:PORT INTERVAL_US SECS".into()),
    };
    if let Err(e) = result {
        eprintln!("probe: {e}");
        std::process::exit(2);
    }
}

fn echo(port: &str) -> Result<(), Box<dyn std::error::Error>> {
    let socket = UdpSocket::bind(("0.0.0.0", port.parse::<u16>()?))?;
    let mut buf = [0u8; 64];
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        let _ = socket.send_to(&buf[..n], from);
    }
}

fn send(target: &str, interval: &str, secs: &str) -> Result<(), Box<dyn std::error::Error>> {
    let target: SocketAddr = target.parse()?;
    let interval = Duration::from_micros(interval.parse()?);
    let duration = Duration::from_secs_f64(secs.parse()?);
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.connect(target)?;
    let sender = socket.try_clone()?;
    let start = Instant::now();
    std::thread::spawn(move || {
        let mut next = Instant::now();
        for seq in 0u64.. {
            // Errors (no route while the VIP moves) are outages too: keep pacing.
            let _ = sender.send(&seq.to_be_bytes());
            next += interval;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
    });
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut buf = [0u8; 64];
    let (mut last, mut gap, mut gap_end) = (None::<Instant>, Duration::ZERO, None);
    while start.elapsed() < duration {
        if socket.recv(&mut buf).is_err() {
            continue;
        }
        let now = Instant::now();
        if let Some(prev) = last
            && now - prev > gap
        {
            gap = now - prev;
            gap_end = Some(SystemTime::now());
        }
        last = Some(now);
    }
    let end = gap_end.map_or(0.0, |t| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    });
    println!("{:.1} {end:.6}", gap.as_secs_f64() * 1000.0);
    Ok(())
}
