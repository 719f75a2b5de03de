//! Strict local fakes of the services countersign talks to: the OpenTrain public API, the Telegram
//! Bot API and Discord's REST API. Each binds `127.0.0.1:0`, speaks the real wire format (routes,
//! error bodies, limits, 429s) and records what it was asked, so countersign's tests and benchmark
//! can prove behaviour without touching the network. A fake that accepts anything proves nothing:
//! these reject what the real services reject.

pub mod discord;
pub mod opentrain;
pub mod telegram;

pub use discord::FakeDiscord;
pub use opentrain::FakeOpenTrain;
pub use telegram::FakeTelegram;
