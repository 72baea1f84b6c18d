"""The app's views, one module each. `build(ui)` lays out the view inside the page being built and puts the
components other views use on `ui`; `wire(ui)`, called once every view is built, connects its events."""
