"""The test suite (a package of its own: a dependency, draccus, installs a top-level ``tests``
package into site-packages, which would shadow a folder without this file)."""
