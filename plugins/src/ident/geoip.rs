//! # ident/geoip — where the client is: country, city, network, distance
//!
//! ## Synopsis
//!
//! ```text
//! ident/geoip [db_dir DIR] [distance IP|LAT,LON] [too_far KM] [add_headers true|false]
//!             [loglevel N]
//! ```
//!
//! ## Description
//!
//! Looks the client's address up in MaxMind-format databases (`.mmdb`: MaxMind's GeoLite2 and
//! GeoIP2, or any database with their layout) when it connects, and keeps what it found in
//! the connection note `GeoIp`: country code and name, continent, city, autonomous system
//! number, and the distance from this server. Other plugins decide with it:
//! `greylisting geoip DE,AT` never greylists clients from those countries. The log line is
//! qpsmtpd's: `EU, DE, Berlin, 504 km`.
//!
//! The plugin reads from `db_dir` the first of `GeoIP2-City.mmdb`, `GeoLite2-City.mmdb`,
//! `GeoIP2-Country.mmdb`, `GeoLite2-Country.mmdb` that exists (a city database has
//! everything a country database has, and the location the distance needs), and, if present,
//! `GeoLite2-ASN.mmdb` or `GeoIP2-ISP.mmdb` for the network number. Without any location
//! database, or with one that is not a valid MaxMind DB, the server refuses to start (and
//! `--check` says why).
//!
//! With `distance`, the plugin computes how far the client is from the server, as the crow
//! flies on a sphere of radius 6378 km (qpsmtpd's figure): `distance` is the server's public
//! address (looked up in the same database, at start) or its latitude and longitude. With
//! `too_far`, a client farther than that many kilometres loses one karma point (qpsmtpd's
//! `adjust_karma(-1)` on the shared note `Karma`), which `karma` counts when the client
//! leaves; that needs `karma` before `ident/geoip` in `config/plugins` (it sets the note up at
//! `connect`), and without `karma` the point is only logged.
//!
//! With `add_headers` (the default, as qpsmtpd's), each message gets what is known of
//! `X-GeoIP-Country`, `X-GeoIP-Continent`, `X-GeoIP-City`, `X-GeoIP-ASN` and
//! `X-GeoIP-Distance` (kilometres).
//!
//! The databases are read whole into memory when the plugin is built (at start and on
//! reload; one copy per process, shared by the workers, read again only when the file
//! changed): a lookup is then a walk of an in-memory tree, CPU only, with no file I/O on the
//! worker. A memory map would save the copy but could page-fault into disk reads on the
//! worker thread under memory pressure. The plugin never updates the databases (use
//! MaxMind's `geoipupdate`, then reload).
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `db_dir DIR` | `/usr/local/share/GeoIP` | the directory holding the `.mmdb` files |
//! | `distance IP\|LAT,LON` | | this server's public address or position: turns on the distance (needs a city database) |
//! | `too_far KM` | | karma -1 for a client farther than this (needs `distance`) |
//! | `add_headers true\|false` | `true` | add the `X-GeoIP-*` headers to each message |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! None; the databases are in `db_dir`.
//!
//! ## Hooks
//!
//! `connect` (the lookup, the distance, `too_far`), `data_post` (the headers, with
//! `add_headers`).
//!
//! ## Notes
//!
//! Writes the connection note `GeoIp` (the plugin API's `shared::GeoIp`: qpsmtpd's
//! `geoip_country`, `geoip_country_name`, `geoip_continent`, `geoip_city`, `geoip_asn`,
//! `geoip_distance`) when the address is in the database, and lowers `Karma` with `too_far`.
//! Read by `greylisting`'s `geoip` argument.
//!
//! Differences from qpsmtpd: only MaxMind DB files (the legacy `.dat` format of Geo::IP is
//! gone from MaxMind's downloads); a missing database is an error at start rather than a
//! plugin that silently does nothing; the distance header is ringsmtpd's; headers with the
//! same names already in the message are left as they are (ours come first).
//!
//! ## Standards
//!
//! MaxMind DB file format 2.0; ISO 3166-1 alpha-2 country codes.
//!
//! ## Security
//!
//! The databases are the operator's, but their texts are still checked before use: names
//! lose control characters and are cut to 64 bytes, a country code that is not two ASCII
//! letters is dropped, and headers go through the header API. The reader bounds its own
//! work on a corrupt file (`maxminddb`'s decoding limits); a lookup error is logged and the
//! connection goes on without a note. A client cannot choose its country, only its
//! address: a distance or country is a hint for scoring, not an identity.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use maxminddb::{geoip2, Reader};
use ringsmtpd_plugin_api::args::{key_values, parse_flag};
use ringsmtpd_plugin_api::shared::{GeoIp, Karma};
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Plugin, PluginInit, Step,
    Transaction,
};

/// The location databases, best first: a city database also has the country and position.
const LOCATION_DBS: &[&str] = &[
    "GeoIP2-City.mmdb",
    "GeoLite2-City.mmdb",
    "GeoIP2-Country.mmdb",
    "GeoLite2-Country.mmdb",
];
/// The network-number databases (both have `autonomous_system_number`).
const ASN_DBS: &[&str] = &["GeoLite2-ASN.mmdb", "GeoIP2-ISP.mmdb"];

/// qpsmtpd's earth radius for the distance, in km.
const EARTH_RADIUS_KM: f64 = 6378.0;
/// How long a name from a database may be in notes, logs and headers.
const MAX_TEXT: usize = 64;

type Db = Arc<Reader<Vec<u8>>>;

/// The `ident/geoip` plugin.
pub struct GeoIpPlugin {
    common: Common,
    location: Db,
    asn: Option<Db>,
    /// The server's latitude and longitude, with `distance`.
    home: Option<(f64, f64)>,
    too_far: Option<u32>,
    add_headers: bool,
}

/// Builds `ident/geoip` from its config line, loading its databases.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build(init)?))
}

fn build(init: &PluginInit<'_>) -> Result<GeoIpPlugin, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut db_dir = PathBuf::from("/usr/local/share/GeoIP");
    let mut distance = None;
    let mut too_far = None;
    let mut add_headers = true;
    for (key, value) in key_values(&rest).map_err(|e| init.error(e))? {
        match key {
            "db_dir" => db_dir = PathBuf::from(value),
            "distance" => distance = Some(value),
            "too_far" => {
                too_far = Some(
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|&km| km > 0)
                        .ok_or_else(|| {
                            init.error(format!("too_far must be kilometres above 0, not '{value}'"))
                        })?,
                )
            }
            "add_headers" => add_headers = parse_flag(key, value).map_err(|e| init.error(e))?,
            _ => return Err(init.unknown(key)),
        }
    }
    let found = |names: &[&str]| names.iter().map(|n| db_dir.join(n)).find(|p| p.exists());
    let Some(location_path) = found(LOCATION_DBS) else {
        return Err(init.error(format!(
            "no GeoIP database in {}: looked for {}",
            db_dir.display(),
            LOCATION_DBS.join(", ")
        )));
    };
    let location = load(&location_path).map_err(|e| init.error(e))?;
    let asn = match found(ASN_DBS) {
        Some(path) => Some(load(&path).map_err(|e| init.error(e))?),
        None => None,
    };
    let home = match distance {
        Some(text) => Some(home(&location, text).map_err(|e| init.error(e))?),
        None => None,
    };
    if too_far.is_some() && home.is_none() {
        return Err(init.error("too_far needs distance (this server's address or position)"));
    }
    Ok(GeoIpPlugin {
        common,
        location,
        asn,
        home,
        too_far,
        add_headers,
    })
}

/// The server's position: `LAT,LON`, or an address the database places.
fn home(db: &Reader<Vec<u8>>, text: &str) -> Result<(f64, f64), String> {
    if let Some((lat, lon)) = text.split_once(',') {
        return match (lat.trim().parse::<f64>(), lon.trim().parse::<f64>()) {
            (Ok(lat), Ok(lon)) if lat.abs() <= 90.0 && lon.abs() <= 180.0 => Ok((lat, lon)),
            _ => Err(format!(
                "distance must be an IP address or LAT,LON in degrees, not '{text}'"
            )),
        };
    }
    let ip: IpAddr = text.parse().map_err(|_| {
        format!("distance must be an IP address or LAT,LON in degrees, not '{text}'")
    })?;
    let city = lookup(db, ip)?.ok_or_else(|| format!("distance: {ip} is not in the database"))?;
    match (city.location.latitude, city.location.longitude) {
        (Some(lat), Some(lon)) => Ok((lat, lon)),
        _ => Err(format!(
            "distance: the database has no position for {ip} (a city database is needed)"
        )),
    }
}

/// Databases read by this process, by path, with the file's size and time when read: every
/// worker builds its plugins, and a reload rebuilds them, but a file is read again only when
/// it changed.
type Loaded = HashMap<PathBuf, (u64, Option<SystemTime>, Db)>;
static LOADED: Mutex<Option<Loaded>> = Mutex::new(None);

/// The database at `path`, read whole and checked, or the copy already read.
fn load(path: &Path) -> Result<Db, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let stamp = (meta.len(), meta.modified().ok());
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    let loaded = loaded.get_or_insert_with(HashMap::new);
    if let Some((len, time, db)) = loaded.get(path) {
        if (*len, *time) == stamp {
            return Ok(db.clone());
        }
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = |e: maxminddb::MaxMindDbError| {
        format!("{}: not a valid MaxMind database: {e}", path.display())
    };
    let reader = Reader::from_source(bytes).map_err(bad)?;
    // A walk of the whole file: a corrupt database fails here, at start, not on a client.
    reader.verify().map_err(bad)?;
    let db = Arc::new(reader);
    loaded.insert(path.to_path_buf(), (stamp.0, stamp.1, db.clone()));
    Ok(db)
}

/// The record for `ip`: a city record, whose fields a country database fills in part.
fn lookup(db: &Reader<Vec<u8>>, ip: IpAddr) -> Result<Option<geoip2::City<'_>>, String> {
    db.lookup(ip)
        .and_then(|r| r.decode::<geoip2::City>())
        .map_err(|e| format!("lookup of {ip}: {e}"))
}

/// A name from a database, as notes and headers take it: control characters dropped, at
/// most [`MAX_TEXT`] bytes, `None` if nothing is left.
fn clean(text: Option<&str>) -> Option<String> {
    let mut out = String::new();
    for c in text?.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_TEXT {
            break;
        }
        out.push(c);
    }
    let out = out.trim().to_string();
    (!out.is_empty()).then_some(out)
}

/// A two-letter code (country, continent), upper case, or `None`.
fn code(text: Option<&str>) -> Option<String> {
    text.filter(|t| t.len() == 2 && t.bytes().all(|b| b.is_ascii_alphabetic()))
        .map(|t| t.to_ascii_uppercase())
}

/// Great-circle distance in km between two (latitude, longitude) points, by the haversine
/// formula on a sphere of [`EARTH_RADIUS_KM`].
fn distance_km((lat1, lon1): (f64, f64), (lat2, lon2): (f64, f64)) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
}

impl GeoIpPlugin {
    /// What the databases know of `ip`; `None` if it is in none of them.
    fn locate(&self, ip: IpAddr) -> Result<Option<GeoIp>, String> {
        let mut geo = GeoIp::default();
        let mut found = false;
        if let Some(city) = lookup(&self.location, ip)? {
            found = true;
            geo.country = code(city.country.iso_code);
            geo.country_name = clean(city.country.names.english);
            geo.continent = code(city.continent.code);
            geo.city = clean(city.city.names.english);
            if let (Some(home), Some(lat), Some(lon)) =
                (self.home, city.location.latitude, city.location.longitude)
            {
                let km = distance_km(home, (lat, lon)).round();
                // Finite and at most half the earth's circumference: the cast is exact.
                geo.distance_km = km.is_finite().then_some(km as u32);
            }
        }
        if let Some(db) = &self.asn {
            let asn = db
                .lookup(ip)
                .and_then(|r| r.decode::<geoip2::Asn>())
                .map_err(|e| format!("ASN lookup of {ip}: {e}"))?;
            if let Some(number) = asn.and_then(|a| a.autonomous_system_number) {
                found = true;
                geo.asn = Some(number);
            }
        }
        Ok(found.then_some(geo))
    }
}

impl Plugin for GeoIpPlugin {
    fn hooks(&self) -> HookSet {
        let set = HookSet::of(&[Hook::Connect]);
        if self.add_headers {
            set.with(Hook::DataPost)
        } else {
            set
        }
    }

    fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        let ip = cx.conn.remote.ip().to_canonical();
        let geo = match self.locate(ip) {
            Ok(Some(geo)) => geo,
            Ok(None) => {
                self.common
                    .log(cx, Level::Info, format_args!("skip, no results"));
                return Step::DECLINED;
            }
            Err(e) => {
                self.common.log(cx, Level::Error, format_args!("skip, {e}"));
                return Step::DECLINED;
            }
        };
        let mut parts: Vec<String> = [&geo.continent, &geo.country, &geo.city]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        if let Some(asn) = geo.asn {
            parts.push(format!("AS{asn}"));
        }
        if let Some(km) = geo.distance_km {
            parts.push(format!("{km} km"));
            if self.too_far.is_some_and(|max| km > max) {
                Karma::adjust(cx, -1);
                parts.push("too far, karma -1".into());
            }
        }
        self.common
            .log(cx, Level::Info, format_args!("{}", parts.join(", ")));
        cx.conn.notes.set(geo);
        Step::DECLINED
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        let Some(geo) = cx.conn.notes.get::<GeoIp>() else {
            return Step::DECLINED;
        };
        let fields = [
            ("X-GeoIP-Country", geo.country.clone()),
            ("X-GeoIP-Continent", geo.continent.clone()),
            ("X-GeoIP-City", geo.city.clone()),
            ("X-GeoIP-ASN", geo.asn.map(|n| n.to_string())),
            (
                "X-GeoIP-Distance",
                geo.distance_km.map(|km| format!("{km} km")),
            ),
        ];
        // Prepended last to first, so they read in this order above the other headers.
        for (name, value) in fields.iter().rev() {
            if let Some(value) = value {
                txn.prepend_header(name, value);
            }
        }
        Step::DECLINED
    }
}

#[cfg(test)]
mod tests {
    use ringsmtpd_plugin_api::testing::{self, cx, run, TempDir};
    use ringsmtpd_plugin_api::Outcome;

    use super::*;

    /// The databases `testdata/make-test-mmdb.pl` wrote (see that script for the networks).
    const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/ident/testdata");

    fn plugin(args: &str) -> GeoIpPlugin {
        testing::build(build, &format!("ident/geoip db_dir {TESTDATA} {args}"), &[]).unwrap()
    }

    /// The note and the karma score after `connect` from `ip` (with `karma` running).
    fn connect(p: &GeoIpPlugin, ip: &str) -> (Option<GeoIp>, i64) {
        let (mut c, _) = cx(&format!("{ip}:4000").replace("[:", "["));
        c.conn.notes.set(Karma::default());
        assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
        (
            c.conn.notes.get::<GeoIp>().cloned(),
            c.conn.notes.get::<Karma>().map_or(99, |k| k.score),
        )
    }

    #[test]
    fn a_city_record_fills_the_note() {
        let p = plugin("");
        let (geo, karma) = connect(&p, "192.0.2.10");
        assert_eq!(
            geo,
            Some(GeoIp {
                country: Some("DE".into()),
                country_name: Some("Germany".into()),
                continent: Some("EU".into()),
                city: Some("Berlin".into()),
                asn: Some(64496),
                distance_km: None,
            })
        );
        assert_eq!(karma, 0);
    }

    #[test]
    fn a_country_only_record_and_an_unknown_address() {
        let p = plugin("distance 192.0.2.10");
        let (geo, _) = connect(&p, "203.0.113.9");
        let geo = geo.expect("Japan is in the database");
        assert_eq!(geo.country.as_deref(), Some("JP"));
        assert_eq!((geo.city, geo.asn, geo.distance_km), (None, None, None));
        assert_eq!(connect(&p, "100.64.0.1"), (None, 0));
        let (geo, _) = connect(&p, "[2001:db8::25]");
        assert_eq!(geo.unwrap().city.as_deref(), Some("Paris"));
    }

    #[test]
    fn distance_from_the_servers_address_or_position() {
        // Berlin to Munich, on a sphere of 6378 km.
        let p = plugin("distance 192.0.2.10");
        let (geo, _) = connect(&p, "192.0.2.200");
        assert_eq!(geo.unwrap().distance_km, Some(505));
        let p = plugin("distance 52.52,13.405");
        let (geo, _) = connect(&p, "192.0.2.200");
        assert_eq!(geo.unwrap().distance_km, Some(505));
        let (geo, _) = connect(&p, "192.0.2.1");
        assert_eq!(geo.unwrap().distance_km, Some(0));
    }

    #[test]
    fn too_far_lowers_karma_beyond_the_limit() {
        let p = plugin("distance 192.0.2.10 too_far 1000");
        assert_eq!(connect(&p, "192.0.2.200").1, 0, "Munich is near");
        let (geo, karma) = connect(&p, "198.51.100.3");
        assert!(geo.unwrap().distance_km.unwrap() > 6000);
        assert_eq!(karma, -1);
    }

    #[test]
    fn the_great_circle_is_right() {
        // A quarter of the equator, and the poles.
        let quarter = std::f64::consts::FRAC_PI_2 * EARTH_RADIUS_KM;
        assert!((distance_km((0.0, 0.0), (0.0, 90.0)) - quarter).abs() < 1e-6);
        assert!((distance_km((90.0, 0.0), (-90.0, 0.0)) - 2.0 * quarter).abs() < 1e-6);
        assert_eq!(distance_km((10.0, 20.0), (10.0, 20.0)), 0.0);
    }

    #[test]
    fn headers_from_the_note() {
        let p = plugin("distance 192.0.2.10");
        let (mut c, _) = cx("192.0.2.200:4000");
        run(p.connect(&mut c));
        let mut txn = Transaction::default();
        run(p.data_post(&mut c, &mut txn));
        assert_eq!(
            txn.added_headers,
            "X-GeoIP-Country: DE\r\nX-GeoIP-Continent: EU\r\nX-GeoIP-City: Munich\r\n\
             X-GeoIP-ASN: 64496\r\nX-GeoIP-Distance: 505 km\r\n"
        );
        let (mut c, _) = cx("100.64.0.1:4000");
        let mut txn = Transaction::default();
        run(p.connect(&mut c));
        run(p.data_post(&mut c, &mut txn));
        assert_eq!(txn.added_headers, "", "nothing known, no header");
        assert_eq!(
            plugin("add_headers false").hooks(),
            HookSet::of(&[Hook::Connect])
        );
        assert_eq!(p.hooks(), HookSet::of(&[Hook::Connect, Hook::DataPost]));
    }

    #[test]
    fn texts_from_the_database_are_cleaned() {
        assert_eq!(
            clean(Some("Sankt\r\nGallen")).as_deref(),
            Some("SanktGallen")
        );
        assert_eq!(clean(Some(" \t ")), None);
        assert_eq!(clean(Some(&"é".repeat(40))).unwrap().len(), 64);
        assert_eq!(code(Some("de")).as_deref(), Some("DE"));
        assert_eq!(code(Some("D1")), None);
        assert_eq!(code(Some("DEU")), None);
    }

    #[test]
    fn a_missing_or_corrupt_database_is_an_error_at_start() {
        let empty = TempDir::new("geoip-empty");
        let e = testing::build_err(
            build,
            &format!("ident/geoip db_dir {}", empty.path().display()),
            &[],
        );
        assert!(e.to_string().contains("no GeoIP database in"), "{e}");
        let bad = TempDir::new("geoip-bad");
        bad.write("GeoLite2-City.mmdb", b"this is not a database");
        let e = testing::build_err(
            build,
            &format!("ident/geoip db_dir {}", bad.path().display()),
            &[],
        );
        assert!(
            e.to_string().contains("not a valid MaxMind database"),
            "{e}"
        );
        // A real database with its data section damaged: the check walks it at start.
        let good = std::fs::read(format!("{TESTDATA}/GeoLite2-City.mmdb")).unwrap();
        let damaged = TempDir::new("geoip-damaged");
        let mut bytes = good.clone();
        let search_tree = bytes.len() / 3;
        bytes[search_tree..search_tree + 64].fill(0xff);
        damaged.write("GeoLite2-City.mmdb", &bytes);
        let e = testing::build_err(
            build,
            &format!("ident/geoip db_dir {}", damaged.path().display()),
            &[],
        );
        assert!(
            e.to_string().contains("not a valid MaxMind database"),
            "{e}"
        );
    }

    #[test]
    fn a_changed_file_is_read_again() {
        let dir = TempDir::new("geoip-reload");
        let country = std::fs::read(format!("{TESTDATA}/GeoLite2-Country.mmdb")).unwrap();
        dir.write("GeoLite2-City.mmdb", &country);
        let line = format!("ident/geoip db_dir {}", dir.path().display());
        let p = testing::build(build, &line, &[]).unwrap();
        assert_eq!(connect(&p, "192.0.2.10").0.unwrap().city, None);
        let city = std::fs::read(format!("{TESTDATA}/GeoLite2-City.mmdb")).unwrap();
        dir.write("GeoLite2-City.mmdb", &city);
        let p = testing::build(build, &line, &[]).unwrap();
        assert_eq!(
            connect(&p, "192.0.2.10").0.unwrap().city.as_deref(),
            Some("Berlin")
        );
    }

    #[test]
    fn bad_lines_are_refused() {
        let d = format!("db_dir {TESTDATA}");
        for args in [
            "distance nowhere",
            "distance 91,0",
            "distance 100.64.0.1",
            "distance 203.0.113.1",
            "too_far 100",
            "distance 192.0.2.1 too_far -5",
            "add_headers maybe",
            "frobnicate 1",
            "db_dir",
        ] {
            let line = format!("ident/geoip {d} {args}");
            let e = testing::build_err(build, &line, &[]);
            assert!(e.to_string().contains("ident/geoip"), "{args}: {e}");
        }
    }
}
