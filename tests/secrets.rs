//! What the agent promises about secrets, each against the real services: no value at any
//! verbosity, nothing a container can write reaching the host through the agent, no untrusted
//! text echoed raw, no leftovers, and the two more ways in (Secrets Manager, secrets as files).

use crate::common;

use common::stack::Stack;
use common::Rig;

/// Every command, at the highest verbosity, on a compose project whose containers hold the
/// secrets in their environment: no value anywhere in the output.
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_at_any_verbosity_with_a_compose_project() {
    let rig = Rig::get();
    let stack = Stack::new(&rig, "verbose").await;
    stack.env(&rig, "API_KEY=very-secret-1a2b3c\n").await;
    let compose = "services:\n  web:\n    image: {registry}/tester/web:1\n    environment:\n      API_KEY: ${API_KEY}\n";
    stack.compose(&rig, compose, "");
    let password = std::env::var("KICKY_RIG_REGISTRY_PASSWORD").unwrap();
    let secrets = ["very-secret-1a2b3c", password.as_str()];
    let (run, stack, rig) = stack.run(rig, &["-vvv", "sync"]).await;
    run.expect(0);
    run.assert_free_of(&secrets);
    assert!(run.stderr.len() > 10_000, "-vvv logged little: is it on?");
    stack.env(&rig, "API_KEY=very-secret-4d5e6f\n").await;
    let secrets = ["very-secret-1a2b3c", "very-secret-4d5e6f", password.as_str()];
    for args in [
        &["-vvv", "plan"][..],
        &["-vvv", "sync"][..],
        &["-vvv", "status"][..],
        &["-vvv", "render"][..],
        &["-vvv", "status", "--json"][..],
        &["-vvv", "plan", "--json"][..],
    ] {
        let run = tokio::task::block_in_place(|| stack.scratch.agent(&rig, args));
        run.assert_free_of(&secrets);
    }
}
