//! orderly behind PgBouncer, Debian's (1.18), started by the test in front of the machine's
//! Postgres with the settings docs/deploy.md gives: session pooling, and the startup parameter
//! sqlx sends that PgBouncer does not track ignored.

use std::{path::PathBuf, process::Command, time::Duration};

use orderly_loadtest::system::StoreUrls;
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::helpers::{free_port, spawn_app_with, test_vars};

/// A PgBouncer of the test's own, stopped and its directory removed on drop.
struct Bouncer {
    process: std::process::Child,
    dir: PathBuf,
    port: u16,
}

impl Bouncer {
    /// In session mode: what Debian's 1.18 can do for sqlx (docs/deploy.md).
    async fn start() -> Self {
        let upstream = orderly_loadtest::proxy::target(&StoreUrls::from_env().postgres, 5432)
            .expect("Postgres on an IP address");
        let dir = std::env::temp_dir().join(format!("orderly-pgbouncer-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let config = dir.join("pgbouncer.ini");
        std::fs::write(
            &config,
            format!(
                "[databases]\n* = host={} port={}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
                 listen_port = {port}\nunix_socket_dir =\nauth_type = trust\n\
                 auth_file = {dir}/users.txt\npool_mode = session\n\
                 ignore_startup_parameters = extra_float_digits\nmax_client_conn = 200\n\
                 default_pool_size = 40\nlogfile = {dir}/pgbouncer.log\n",
                upstream.ip(),
                upstream.port(),
                dir = dir.display(),
            ),
        )
        .unwrap();
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").unwrap();
        // PgBouncer will not run as root: as root, start it as Postgres's own user.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let mut command = if root {
            Command::new("chown")
                .args(["-R", "postgres", dir.to_str().unwrap()])
                .status()
                .unwrap();
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "pgbouncer"]);
            c
        } else {
            Command::new("pgbouncer")
        };
        let process = command
            .arg(&config)
            .spawn()
            .expect("pgbouncer starts (scripts/test installs Debian's package)");
        let bouncer = Self { process, dir, port };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return bouncer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("pgbouncer did not open port {port}: {}", bouncer.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        // runuser passes the signal on to PgBouncer.
        let _ = Command::new("kill")
            .args(["-TERM", &self.process.id().to_string()])
            .status();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderly_runs_its_sagas_through_pgbouncer_in_session_mode() {
    let bouncer = Bouncer::start().await;
    let (vars, db_name) = test_vars(&[]);
    let direct = &vars["ORDERLY_DATABASE_URL"];
    let through = direct.replace(
        &direct[direct.find('@').unwrap() + 1..direct.rfind('/').unwrap()],
        &format!("127.0.0.1:{}", bouncer.port),
    );
    let app = spawn_app_with(&[("ORDERLY_DATABASE_URL", &through)]).await;

    let product = app.create_product(10_000, 5).await;
    let (customer, token) = app.create_customer(100_000).await;
    let placed = app.place_order(&token, "bounced", &[(product, 2)]).await;
    assert_eq!(placed.status, 202, "{}", placed.body);
    let order = placed.body["id"].as_str().unwrap().to_owned();
    assert_eq!(app.settled_order(&order).await["status"], "confirmed");
    assert_eq!(app.balance(customer).await, 80_000);
    assert!(
        bouncer.log().contains(&format!("db={db_name}")),
        "the app's connections went through PgBouncer: {}",
        bouncer.log()
    );
}
