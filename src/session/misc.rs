//! RSET, NOOP, VRFY, HELP, QUIT and verbs the core does not know.

use ringsmtpd_plugin_api::{Level, Outcome};

use super::respond::{self, Answer, Resolved};
use super::{End, Flow, State};
use crate::hooks::Call;
use crate::proto::reply;

impl State {
    pub(super) async fn rset(&mut self, out: &mut Vec<u8>) -> Flow {
        self.end_transaction().await;
        reply::write(out, 250, "2.0.0", "OK");
        Flow::Next
    }

    pub(super) async fn noop(&mut self, out: &mut Vec<u8>) -> Flow {
        self.answer(out, Call::Noop, 250, "2.0.0", "OK").await
    }

    pub(super) async fn vrfy(&mut self, out: &mut Vec<u8>, arg: &str) -> Flow {
        let outcome = self.run(Call::Vrfy(arg)).await;
        match respond::for_outcome(Call::Vrfy(arg).hook(), outcome.clone()) {
            Answer::Reply(r) => self.reply_flow(out, r, "refused at VRFY"),
            Answer::Answered => Flow::Next,
            Answer::Proceed if matches!(outcome, ringsmtpd_plugin_api::Outcome::Ok(_)) => {
                let (enh, text) = respond::ok_text(&outcome, "2.1.5", "User OK");
                reply::write(out, 250, &enh, &text);
                Flow::Next
            }
            // RFC 5321 §3.5.3: 252 when the server will not verify but will try delivery.
            Answer::Proceed => {
                let text = "Just try sending a mail and we'll see how it turns out ...";
                reply::write(out, 252, "2.1.5", text);
                Flow::Next
            }
        }
    }

    pub(super) async fn help(&mut self, out: &mut Vec<u8>, arg: &str) -> Flow {
        let text = concat!(
            "This is ringsmtpd ",
            env!("CARGO_PKG_VERSION"),
            "\nCommands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT",
            "\nEnd of HELP info"
        );
        self.answer(out, Call::Help(arg), 214, "2.0.0", text).await
    }

    pub(super) async fn quit(&mut self, out: &mut Vec<u8>) -> Flow {
        let outcome = self.run(Call::Quit).await;
        if let Outcome::Done(reply) = outcome {
            // DONE: the plugin's reply (or none); the connection closes all the same.
            self.quit_done = true;
            if let Some(r) = reply {
                Resolved::from_reply(r).write(out);
            }
            return Flow::Close(End::Quit);
        }
        let me = self.env.svc.me();
        let text = format!("{me} closing connection. Have a wonderful day.");
        reply::write(out, 221, "2.0.0", &text);
        Flow::Close(End::Quit)
    }

    pub(super) async fn unrecognized(&mut self, out: &mut Vec<u8>, verb: &str, args: &str) -> Flow {
        let outcome = self.run(Call::UnrecognizedCommand(verb, args)).await;
        let reply =
            match respond::for_outcome(Call::UnrecognizedCommand(verb, args).hook(), outcome) {
                Answer::Answered => return Flow::Next, // a plugin implements the verb and answered
                Answer::Reply(r) if r.code < 400 => {
                    r.write(out); // a plugin implements the verb: not an error
                    return Flow::Next;
                }
                Answer::Reply(r) if r.disconnect => {
                    return self.reply_flow(out, r, "unrecognized command")
                }
                Answer::Reply(r) => r,
                Answer::Proceed => {
                    self.cx.log(
                        Level::Info,
                        "core",
                        format_args!("unrecognized command '{verb}'"),
                    );
                    Resolved::new(500, "5.5.1", "Unrecognized command")
                }
            };
        self.unrecognized += 1;
        if self.unrecognized > self.env.settings.max_unrecognized {
            let text = "Too many unrecognized commands, closing connection";
            reply::write(out, 421, "4.7.0", text);
            return Flow::Close(End::TooManyErrors);
        }
        self.error_flow(out, reply)
    }

    /// A verb whose only answers are the hook's deny reply or a fixed positive reply.
    async fn answer(
        &mut self,
        out: &mut Vec<u8>,
        call: Call<'_>,
        code: u16,
        enh: &'static str,
        text: &'static str,
    ) -> Flow {
        let outcome = self.run(call).await;
        match respond::for_outcome(call.hook(), outcome) {
            Answer::Reply(r) => self.reply_flow(out, r, "refused"),
            Answer::Answered => Flow::Next,
            Answer::Proceed => {
                reply::write(out, code, enh, text);
                Flow::Next
            }
        }
    }
}
