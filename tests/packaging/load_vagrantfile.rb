# Loads a Vagrantfile against a stand-in for Vagrant's configuration DSL and prints, as JSON,
# {"calls": [...], "strings": {...}}: every call the Vagrantfile made, as [receiver, method,
# positional args, keyword args], and the string constants it defined (shell scripts, paths).
# The receiver is a dotted path from `config`; inside `config.vm.define NAME do |node|` it starts
# at `machine:NAME`. Trigger `ruby` blocks run on the host during `vagrant up`: they are recorded,
# not run.
#
# Usage: ruby load_vagrantfile.rb PATH/TO/Vagrantfile   (used by test_provision.py)
require "json"
require "fileutils"

class Recorder
  def initialize(path, log)
    @path = path
    @log = log
  end

  def method_missing(name, *args, **kwargs, &block)
    plain = args.map { |a| a.is_a?(Symbol) ? a.to_s : a }
    @log << [@path, name.to_s, plain, kwargs]
    child = Recorder.new(name == :define ? "machine:#{args[0]}" : "#{@path}.#{name}", @log)
    block.call(child) if block && name != :ruby
    child
  end

  def respond_to_missing?(*) = true
end

module Vagrant
  LOG = []

  def self.configure(version)
    raise "unexpected configuration version #{version}" unless version == "2"
    yield Recorder.new("config", LOG)
  end
end

before = Object.constants
Dir.chdir(File.dirname(ARGV.fetch(0))) { load File.basename(ARGV[0]) }
strings = (Object.constants - before)
          .map { |name| [name.to_s, Object.const_get(name)] }
          .select { |_, value| value.is_a?(String) }
          .to_h
puts JSON.generate({ "calls" => Vagrant::LOG, "strings" => strings })
