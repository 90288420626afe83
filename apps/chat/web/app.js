// Placeholder: the web client proper comes from the h/web branch.
"use strict";
