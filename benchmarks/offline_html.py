"""Make the HTML that `asv publish` wrote viewable without internet access.

asv's pages load jQuery, flot, bootstrap, stupidtable and md5 from public CDNs;
on a machine that reaches only package registries they show "Can not determine
continental origin of swallow" instead of graphs. This rewrites those URLs to
copies under <html_dir>/vendor/, taken from Debian's packages:

    apt-get install libjs-jquery libjs-jquery-flot libjs-bootstrap \\
        libjs-jquery-stupidtable node-blueimp-md5
    asv publish && python benchmarks/offline_html.py .asv/html && asv preview

(Debian ships flot 4, whose bundle includes the time/selection/categories
plugins asv asks for; the small orderBars plugin, which Debian lacks, becomes a
no-op: grouped bars then overlap instead of sitting side by side.)
"""
import re
import shutil
import sys
from pathlib import Path

JS = Path("/usr/share/javascript")
VENDOR = {  # the end of the CDN URL -> the Debian file that replaces it
    "jquery-3.3.1.min.js": JS / "jquery/jquery.min.js",
    "jquery.flot.min.js": JS / "jquery-flot/jquery.flot.js",
    "jquery.flot.time.min.js": JS / "jquery-flot/jquery.flot.time.js",
    "jquery.flot.selection.min.js": JS / "jquery-flot/jquery.flot.selection.js",
    "jquery.flot.categories.min.js": JS / "jquery-flot/jquery.flot.categories.js",
    "jquery.flot.orderBars.js": None,
    "stupidtable.min.js": JS / "jquery-stupidtable/stupidtable.min.js",
    "md5.min.js": JS / "blueimp-md5/md5.min.js",
    "bootstrap.min.js": JS / "bootstrap/js/bootstrap.min.js",
    "bootstrap.min.css": JS / "bootstrap/css/bootstrap.min.css",
}
CDN = re.compile(r'(src|href)="https://[^"]*/([^"/]+)"(?:\s+integrity="[^"]*")?')


def main(html_dir):
    html_dir = Path(html_dir)
    vendor = html_dir / "vendor"
    vendor.mkdir(exist_ok=True)
    for name, source in VENDOR.items():
        if source is None:
            (vendor / name).write_text("/* orderBars: not packaged in Debian; bars overlap */\n")
        elif not source.exists():
            sys.exit(f"{source} is missing: apt-get install the packages named in {__file__}")
        else:
            shutil.copyfile(source, vendor / name)

    def local(match):
        attr, name = match.groups()
        return f'{attr}="vendor/{name}"' if name in VENDOR else match.group(0)

    pages = sorted(html_dir.glob("*.html"))
    for page in pages:
        page.write_text(CDN.sub(local, page.read_text()))
    print(f"{len(pages)} pages in {html_dir} now load their scripts from {vendor}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".asv/html")
