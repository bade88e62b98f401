-- Registers :OaiChat (the module does it when loaded).
require "oai_chat"
