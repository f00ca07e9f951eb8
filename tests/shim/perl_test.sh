#!/usr/bin/env bash
# perl: hashes, regexes, sorting, string building, closures and a sprintf mix.
source "$TEST_SRCDIR/$TEST_WORKSPACE/tests/shim/compare_lib.sh"
need_program perl

workload() {
  perl -e '
    use strict; use warnings;
    my %h; my @words;
    for my $i (1 .. 200000) {
      my $w = join "", map { chr(97 + ($i * $_) % 26) } 1 .. (3 + $i % 9);
      $h{$w}++; push @words, $w if $i % 7 == 0;
    }
    printf "%d distinct, %d kept\n", scalar(keys %h), scalar(@words);
    my @top = (sort { $h{$b} <=> $h{$a} || $a cmp $b } keys %h)[0 .. 9];
    print "$_ $h{$_}\n" for @top;
    my $text = join " ", @words;
    my $n = () = $text =~ /\b([aeiou])\w*\1\b/g;
    print "matches $n\n";
    (my $t = $text) =~ s/([b-df-hj-np-tv-z]+)/uc $1/ge;
    print length($t), " ", substr($t, 0, 60), "\n";
    my @subs = map { my $k = $_; sub { $k * $_[0] } } 1 .. 1000;
    my $sum = 0; $sum += $_->(3) for @subs; print "closures $sum\n";
    my %nested; $nested{$_ % 97}{$_ % 13}[$_ % 5] .= "x" for 1 .. 100000;
    print scalar(keys %nested), " ", length($nested{5}{6}[2] // ""), "\n";
    print join(",", map { sprintf "%.3e|%08x|%-5s", $_ / 7, $_ * 2654435761 % 2**32, $_ } 1 .. 5), "\n";
    die "deliberate failure at the end\n";
  '
}

compare_runs perl
