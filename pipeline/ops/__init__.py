"""Operations: stages, runner, executor, workspace, run log and command bodies."""
