// dlhisto's viewer page: OpenSeadragon shows the slide's Deep Zoom tiles and one tiled image per
// layer; this glue adds the layer switches and opacity sliders, the legend, the scale bar and
// the measurements of a clicked object. Text from the inputs is only ever set as textContent.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("dlhisto-viewer").textContent);
  const base = data.base;
  const items = [];          // the layers' tiled images, in data.layers' order
  const cells = {};          // click lookups loaded: "layer:cx_cy" -> rows
  const waiting = {};        // click lookups loading: "layer:cx_cy" -> resolve

  function element(tag, text, className) {
    const made = document.createElement(tag);
    if (text !== undefined && text !== null) made.textContent = String(text);
    if (className) made.className = className;
    return made;
  }

  function tileSource(pyramid) {
    const source = new OpenSeadragon.DziTileSource({
      width: pyramid.width, height: pyramid.height, tileSize: pyramid.tile_size, tileOverlap: 0,
      tilesUrl: base + pyramid.dzi.replace(/\.dzi$/, "_files/"), fileFormat: pyramid.format});
    if (pyramid.present) {  // overlays write no empty tiles: never ask for them
      const top = Math.ceil(Math.log2(Math.max(pyramid.width, pyramid.height)));
      const bits = {};
      Object.keys(pyramid.present).forEach(function (level) {
        bits[level] = Uint8Array.from(atob(pyramid.present[level]), function (c) { return c.charCodeAt(0); });
      });
      source.tileExists = function (level, x, y) {
        const columns = Math.ceil(Math.ceil(pyramid.width / Math.pow(2, top - level)) / pyramid.tile_size);
        const index = y * columns + x;
        const levelBits = bits[level];
        return Boolean(levelBits) && x < columns && (levelBits[index >> 3] >> (index & 7)) & 1;
      };
    }
    return source;
  }

  const viewer = OpenSeadragon({
    id: "viewer", tileSources: tileSource(data.slide), drawer: "canvas", showNavigator: true,
    navigatorPosition: "TOP_LEFT", showNavigationControl: false, maxZoomPixelRatio: 4,
    gestureSettingsMouse: {clickToZoom: false}, imageSmoothingEnabled: false, immediateRender: true});

  const opened = new Promise(function (resolve) {
    viewer.addOnceHandler("open", function () {
      let added = 0;
      if (!data.layers.length) resolve();
      data.layers.forEach(function (layer, k) {
        viewer.addTiledImage({
          tileSource: tileSource(layer), x: 0, y: 0, index: k + 1, opacity: layer.shown ? layer.opacity : 0,
          width: layer.width * layer.scale / data.slide.width,
          success: function (event) {
            items[k] = event.item;
            added += 1;
            if (added === data.layers.length) resolve();
          }});
      });
    });
  });

  function slideItem() { return viewer.world.getItemAt(0); }

  // --- layers panel ---
  function layerControls() {
    const section = document.getElementById("layers");
    data.layers.forEach(function (layer, k) {
      const box = element("div", null, "layer");
      const label = element("label");
      const shown = element("input");
      shown.type = "checkbox";
      shown.checked = layer.shown;
      shown.dataset.layer = String(k);
      label.appendChild(shown);
      label.appendChild(element("span", " " + layer.name));
      label.appendChild(element("span", " (" + layer.kind + ")", "kind"));
      const slider = element("input");
      slider.type = "range";
      slider.min = "0";
      slider.max = "100";
      slider.value = String(Math.round(layer.opacity * 100));
      slider.title = "opacity";
      slider.dataset.layer = String(k);
      function apply() { if (items[k]) items[k].setOpacity(shown.checked ? slider.value / 100 : 0); }
      shown.addEventListener("change", apply);
      slider.addEventListener("input", apply);
      box.appendChild(label);
      box.appendChild(slider);
      if (layer.legend.length) {
        const legend = element("ul", null, "legend");
        layer.legend.forEach(function (entry) {
          const row = element("li");
          const swatch = element("span", null, "swatch");
          swatch.style.background = "rgb(" + entry.colour.map(Number).join(",") + ")";
          row.appendChild(swatch);
          row.appendChild(element("span", entry.name + (entry.count === null ? "" : ": " + entry.count)));
          legend.appendChild(row);
        });
        box.appendChild(legend);
      }
      section.appendChild(box);
    });
  }

  // --- scale bar ---
  const NICE = [1, 2, 5];
  function updateScaleBar() {
    const item = slideItem();
    if (!item) return;
    const screenPerImage = item.viewportToImageZoom(viewer.viewport.getZoom(true));
    const unitPerScreen = (data.pixel_size || 1) / screenPerImage;
    let length = 1e-3;
    for (let exponent = -3; exponent < 9; exponent++) {
      for (const n of NICE) {
        const candidate = n * Math.pow(10, exponent);
        if (candidate / unitPerScreen <= 150) length = candidate;
      }
    }
    document.getElementById("scalebar-line").style.width = (length / unitPerScreen) + "px";
    const text = data.pixel_size ? (length >= 1000 ? length / 1000 + " mm" : length + " µm") : length + " px";
    document.getElementById("scalebar-text").textContent = text;
  }
  viewer.addHandler("animation", updateScaleBar);
  viewer.addHandler("open", updateScaleBar);
  viewer.addHandler("resize", updateScaleBar);

  // --- clicks: the object under the pointer and its measurements ---
  window.dlhistoCell = function (key, cell, rows) {
    const id = key + ":" + cell;
    cells[id] = rows;
    if (waiting[id]) waiting[id](rows);
  };

  function loadCell(layer, cell) {
    const id = layer.lookup.key + ":" + cell;
    if (cells[id]) return Promise.resolve(cells[id]);
    return new Promise(function (resolve) {
      waiting[id] = resolve;
      const script = document.createElement("script");
      script.src = base + layer.lookup.folder + "/" + cell + ".js";
      script.onerror = function () { resolve([]); };
      script.onload = function () { resolve(cells[id] || []); };
      document.head.appendChild(script);
    });
  }

  function inside(x, y, ring) {
    let hit = false;
    for (let i = 0, j = ring.length - 2; i < ring.length; j = i, i += 2) {
      const xi = ring[i], yi = ring[i + 1], xj = ring[j], yj = ring[j + 1];
      if ((yi > y) !== (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) hit = !hit;
    }
    return hit;
  }

  async function objectAt(x, y) {
    for (let k = data.layers.length - 1; k >= 0; k--) {  // the top layer first
      const layer = data.layers[k];
      if (!layer.lookup || !items[k] || items[k].getOpacity() === 0) continue;
      const cell = Math.floor(x / layer.lookup.cell) + "_" + Math.floor(y / layer.lookup.cell);
      const wanted = [cell, "large"].filter(function (name) { return layer.lookup.cells.indexOf(name) >= 0; });
      const rows = [].concat.apply([], await Promise.all(wanted.map(function (name) { return loadCell(layer, name); })));
      for (const row of rows) {
        const box = row[2];
        if (x < box[0] || x > box[2] || y < box[1] || y > box[3]) continue;
        if (row[3].some(function (ring) { return inside(x, y, ring); })) return {layer: layer, row: row};
      }
    }
    return null;
  }

  let highlight = null;
  function show(found, x, y) {
    const details = document.getElementById("details");
    details.replaceChildren(element("h2", "Object"));
    if (highlight) { viewer.removeOverlay(highlight); highlight = null; }
    if (!found) {
      details.appendChild(element("p", "No object at x " + Math.round(x) + ", y " + Math.round(y) + ".", "hint"));
      return null;
    }
    const layer = found.layer, row = found.row;
    const className = row[1] >= 0 ? layer.lookup.classes[row[1]] : "unclassified";
    const table = element("table", null, "measurements");
    const shown = {layer: layer.name, "class": className, measurements: {}};
    function line(name, value) {
      const tr = element("tr");
      tr.appendChild(element("th", name));
      tr.appendChild(element("td", value));
      table.appendChild(tr);
    }
    line("layer", layer.name);
    line("class", className);
    layer.lookup.columns.forEach(function (column, c) {
      if (row[4][c] === null) return;
      shown.measurements[column] = row[4][c];
      line(column, row[4][c]);
    });
    details.appendChild(table);
    const box = row[2];
    highlight = element("div", null, "highlight");
    viewer.addOverlay({element: highlight,
                       location: slideItem().imageToViewportRectangle(box[0], box[1], box[2] - box[0], box[3] - box[1])});
    return shown;
  }

  async function select(x, y) { return show(await objectAt(x, y), x, y); }

  viewer.addHandler("canvas-click", function (event) {
    if (!event.quick) return;
    const point = slideItem().viewerElementToImageCoordinates(event.position);
    select(point.x, point.y);
  });

  // --- for scripts and tests: go to a place, wait until everything in view is drawn ---
  function goTo(x, y, screenPerImage) {
    const item = slideItem();
    viewer.viewport.panTo(item.imageToViewportCoordinates(x, y), true);
    viewer.viewport.zoomTo(item.imageToViewportZoom(screenPerImage), null, true);
    viewer.viewport.applyConstraints(true);
  }

  function drawn() {
    return new Promise(function (resolve) {
      (function check() {
        const all = [];
        for (let k = 0; k < viewer.world.getItemCount(); k++) all.push(viewer.world.getItemAt(k));
        const ready = all.every(function (item) { return item.getOpacity() === 0 || item.getFullyLoaded(); });
        if (all.length === data.layers.length + 1 && ready) {  // hidden layers load nothing
          requestAnimationFrame(function () { requestAnimationFrame(resolve); });
        } else {
          setTimeout(check, 50);
        }
      })();
    });
  }

  document.getElementById("title").textContent = data.name;
  document.getElementById("size").textContent = data.slide.width + " x " + data.slide.height + " px" +
    (data.pixel_size ? ", " + data.pixel_size.toPrecision(3) + " µm/px" : ", pixel size unknown");
  layerControls();
  window.dlhisto = {viewer: viewer, data: data, opened: opened, goTo: goTo, drawn: drawn, select: select,
                    imageToScreen: function (x, y) {
                      const point = slideItem().imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
                      const rect = viewer.element.getBoundingClientRect();
                      return {x: point.x + rect.left, y: point.y + rect.top};
                    }};
})();
