//! hyper 1.x on corral's runtime: an executor, a timer, and a TCP connector built on `async-io`.
//!
//! [`Handle`] implements [`hyper::rt::Executor`] (hyper spawns connection tasks through it, at
//! the handle's priority); [`HyperTimer`] implements [`hyper::rt::Timer`] with `async-io`
//! timers; [`HyperIo`] (from `smol-hyper`) adapts any `futures-io` stream, such as an
//! `Async<TcpStream>`, to hyper's I/O traits.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};

use super::Handle;

/// Adapts a `futures-io` byte stream (e.g. `Async<TcpStream>`) to hyper's `Read`/`Write`.
pub use smol_hyper::rt::FuturesIo as HyperIo;

impl<F> hyper::rt::Executor<F> for Handle
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.spawn(self.priority, future).detach();
    }
}

/// [`hyper::rt::Timer`] on `async-io` timers, for hyper's timeouts and keep-alive.
#[derive(Debug, Clone, Copy, Default)]
pub struct HyperTimer;

struct Sleep(Timer);

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl hyper::rt::Sleep for Sleep {}

impl hyper::rt::Timer for HyperTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep(Timer::after(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep(Timer::at(deadline)))
    }
}

/// Opens a TCP connection with `async-io`, ready for `hyper::client::conn` handshakes.
pub async fn connect(addr: SocketAddr) -> io::Result<HyperIo<Async<TcpStream>>> {
    let stream = Async::<TcpStream>::connect(addr).await?;
    stream.get_ref().set_nodelay(true)?;
    Ok(HyperIo::new(stream))
}
