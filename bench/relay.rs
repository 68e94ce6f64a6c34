//! The ceiling for any proxy in bench/proxy.sh: a byte relay that pairs
//! each client connection with its own connection to the backend and
//! copies bytes both ways, on one tokio thread, without reading HTTP at
//! all. It cannot route, retry, hold, rewrite headers or drain, so it is
//! no alternative; it shows what the machine's sockets allow a user-space
//! proxy on epoll, and so how much of the way to that Baton's HTTP work
//! costs.
//!
//!     relay LISTEN_ADDR BACKEND_ADDR

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(backend)) = (args.next(), args.next()) else {
        eprintln!("usage: relay LISTEN_ADDR BACKEND_ADDR");
        std::process::exit(2);
    };
    let parse = |a: String| -> std::io::Result<SocketAddr> {
        a.parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (listen, backend) = (parse(listen)?, parse(backend)?);
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?
        .block_on(relay(listen, backend))
}

async fn relay(listen: SocketAddr, backend: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (mut client, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut upstream = TcpStream::connect(backend).await?;
            client.set_nodelay(true)?;
            upstream.set_nodelay(true)?;
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
            Ok::<_, std::io::Error>(())
        });
    }
}
