"""The per-request pipeline: the stage contract (``stage``), the ports stages are built from
(``ports``), policies (``policy``) and the runner (``runner``). Import the module you need: this
package re-exports nothing, so importing the contract never imports the runner."""
