# An equivs control file: a tiny package that makes facteur this host's MTA
# on Debian, where the MTA package owns /usr/sbin/sendmail and provides the
# virtual package mail-transport-agent (there are no alternatives for it).
#
#   apt-get install equivs
#   equivs-build facteur-mta.ctl
#   apt-get install ./facteur-mta_1.0_all.deb   # removes exim4 or postfix
#
# facteur itself is installed as /usr/local/bin/facteur (see README-deploy.md).
Section: mail
Priority: optional
Standards-Version: 4.6.2

Package: facteur-mta
Version: 1.0
Maintainer: Postmaster <postmaster@example.net>
Provides: mail-transport-agent
Conflicts: mail-transport-agent
Replaces: mail-transport-agent
Links: /usr/local/bin/facteur /usr/sbin/sendmail
 /usr/local/bin/facteur /usr/bin/mailq
 /usr/local/bin/facteur /usr/bin/newaliases
Description: facteur as this host's mail transport agent
 Symbolic links so that sendmail, mailq and newaliases run facteur
 (installed as /usr/local/bin/facteur), and the mail-transport-agent
 virtual package that cron, mailutils, logcheck and others depend on.
