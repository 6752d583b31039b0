#!/usr/bin/perl
# Writes the tiny MaxMind databases the ident/geoip tests read (Debian: libmaxmind-db-writer-perl):
#   make-test-mmdb.pl DIR   ->  DIR/GeoLite2-City.mmdb, DIR/GeoLite2-Country.mmdb, DIR/GeoLite2-ASN.mmdb
# The unit tests use the copies committed beside this script (regenerate them with
# `perl make-test-mmdb.pl .`); tests/e2e/test_geoip.py runs it into its own directory.
# Extra networks for a test: NETWORK=CC:LAT:LON arguments after DIR add city records.
use strict;
use warnings;
use MaxMind::DB::Writer::Tree;

my $dir = shift or die "usage: $0 DIR [NETWORK=CC:LAT:LON...]\n";

my %types = (
    city => 'map', continent => 'map', country => 'map', location => 'map', names => 'map',
    code => 'utf8_string', iso_code => 'utf8_string', en => 'utf8_string',
    latitude => 'double', longitude => 'double', geoname_id => 'uint32',
    autonomous_system_number => 'uint32', autonomous_system_organization => 'utf8_string',
);

sub tree {
    my ($type) = @_;
    return MaxMind::DB::Writer::Tree->new(
        ip_version => 6, record_size => 24, database_type => $type,
        languages => ['en'], description => { en => "ringsmtpd test $type" },
        map_key_type_callback => sub { $types{ $_[0] } // die "no type for $_[0]" },
        remove_reserved_networks => 0,
    );
}

sub place {
    my ($cc, $country, $continent, $city, $lat, $lon) = @_;
    my %r = (
        country => { iso_code => $cc, names => { en => $country } },
        continent => { code => $continent },
    );
    $r{city} = { names => { en => $city } } if defined $city;
    $r{location} = { latitude => $lat, longitude => $lon } if defined $lat;
    return \%r;
}

my %continent = (DE => 'EU', FR => 'EU', US => 'NA', JP => 'AS', AU => 'OC');
my @places = (
    # Berlin and Munich: 504 km apart on qpsmtpd's sphere (radius 6378 km).
    ['192.0.2.0/25',    place('DE', 'Germany', 'EU', 'Berlin', 52.52, 13.405)],
    ['192.0.2.128/25',  place('DE', 'Germany', 'EU', 'Munich', 48.1351, 11.582)],
    ['198.51.100.0/24', place('US', 'United States', 'NA', 'New York', 40.7128, -74.006)],
    ['203.0.113.0/24',  place('JP', 'Japan', 'AS')],
    ['2001:db8::/32',   place('FR', 'France', 'EU', 'Paris', 48.8566, 2.3522)],
);
for my $extra (@ARGV) {
    my ($net, $cc, $lat, $lon) = $extra =~ /^([^=]+)=([A-Z]{2}):([-0-9.]+):([-0-9.]+)$/
      or die "bad extra network '$extra'\n";
    push @places, [$net, place($cc, $cc, $continent{$cc} // 'EU', "City $cc", $lat, $lon)];
}

my $city = tree('GeoLite2-City');
my $country = tree('GeoLite2-Country');
for my $p (@places) {
    my ($net, $r) = @$p;
    $city->insert_network($net, $r);
    $country->insert_network($net, { country => $r->{country}, continent => $r->{continent} });
}
my $asn = tree('GeoLite2-ASN');
$asn->insert_network('192.0.2.0/24',
    { autonomous_system_number => 64496, autonomous_system_organization => 'Example AS' });

for ([$city, 'GeoLite2-City'], [$country, 'GeoLite2-Country'], [$asn, 'GeoLite2-ASN']) {
    my ($tree, $name) = @$_;
    open my $fh, '>:raw', "$dir/$name.mmdb" or die "$dir/$name.mmdb: $!\n";
    $tree->write_tree($fh);
    close $fh or die "$dir/$name.mmdb: $!\n";
}
