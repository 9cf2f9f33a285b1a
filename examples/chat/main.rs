//! The chat of the `server-sent-events` package, on eric's Publisher, with rooms: open
//! http://localhost:5000 in two windows, pick names and a room, talk. Each member holds a
//! signed token for their room alone. Each newcomer gets the recent
//! history first (initial data), and everyone is greeted by name when someone joins (a
//! publication made per subscriber from its properties). Plain HTML and EventSource.
//! `cargo run --example chat` (`PORT=5001` to move it).

mod app;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "5000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("chat on http://localhost:{port} (open it in two windows)");
    axum::serve(listener, app::router()).await?;
    Ok(())
}
