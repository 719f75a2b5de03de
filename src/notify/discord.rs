//! Discord, through serenity's REST client. (Being written: see issue #3.)

use std::time::Duration;

use super::{Card, MessageRef, Notifier, NotifyError};
use crate::config::DiscordSettings;

pub struct Discord {
    min_interval: Duration,
}

impl Discord {
    pub fn new(settings: &DiscordSettings) -> Result<Discord, String> {
        Ok(Discord {
            min_interval: settings.min_send_interval,
        })
    }
}

impl Notifier for Discord {
    fn channel(&self) -> &'static str {
        "discord"
    }

    fn min_interval(&self) -> Duration {
        self.min_interval
    }

    async fn post(&self, _card: &Card) -> Result<MessageRef, NotifyError> {
        Err(NotifyError::Permanent(
            "the Discord notifier is not written yet".into(),
        ))
    }

    async fn edit(&self, _message: &MessageRef, _card: &Card) -> Result<(), NotifyError> {
        Err(NotifyError::Permanent(
            "the Discord notifier is not written yet".into(),
        ))
    }
}
