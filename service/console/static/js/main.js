// Entry point: each console page names its module in <body data-page>; the module renders into <main>.
const pages = {
  queue: () => import("./queue.js"),
  labels: () => import("./labels.js"),
  models: () => import("./models.js"),
  activity: () => import("./activity.js"),
};

const page = document.body.dataset.page;
if (pages[page]) {
  pages[page]().then((mod) => mod.start(document.getElementById("app"))).catch((err) => {
    const status = document.getElementById("status");
    if (status) { status.textContent = `The page failed to start: ${err.message}`; status.classList.add("error"); }
    throw err;
  });
}
