using System.Text;
using System.Text.RegularExpressions;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.FirstRun;

/// <summary>
/// The Quickstart stopped as <c>docker stop</c> or a CI timeout stops it (SIGTERM) and as a terminal's Ctrl-C does (SIGINT),
/// a real process each time: the running stage stops at its next step, and the Quickstart exits with code 130 and one
/// line saying what was running and what is kept, never a stack trace. The signal comes early in the run (the teacher's
/// pretraining), so a case takes seconds. The SIGINT case starts the Quickstart with SIGINT at its default, as a terminal
/// does: run from the background of a non-interactive shell (as CI may run the tests), the test host and its children
/// would otherwise have SIGINT ignored, and the case failed there.
/// </summary>
public class QuickstartCancellationTests
{
    [Theory]
    [InlineData("TERM")]
    [InlineData("INT")]
    public async Task ASignalDuringTheTeachersPretrainingExits130WithOneLine(string signal)
    {
        using var folder = new TempDir("retrikt-quickstart-cancel-");
        var outFolder = Path.Combine(folder.Path, "out");
        using var process = ChildProcess.Start("RetriKT.Quickstart.dll", ["--quick", "--out", outFolder], interruptible: signal == "INT");
        // Without a terminal the progress bars print "<stage>: <n>%" lines; one for the teacher between 0 and 100 % says
        // its pretraining is running.
        var output = new StringBuilder();
        var pretraining = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (output) output.AppendLine(e.Data);
            if (Regex.IsMatch(e.Data, @"^Teacher: [1-9]\d?%$")) pretraining.TrySetResult();
        };
        process.BeginOutputReadLine();
        var error = process.StandardError.ReadToEndAsync();
        try
        {
            if (await Task.WhenAny(pretraining.Task, Task.Delay(TimeSpan.FromSeconds(120))) != pretraining.Task)
                Assert.Fail($"no pretraining progress within 120 s; output:\n{output}");
            ChildProcess.Signal(process, signal);
            // A pretraining step takes well under a second: the process stops at the next one.
            var exited = process.WaitForExitAsync();
            if (await Task.WhenAny(exited, Task.Delay(TimeSpan.FromSeconds(30))) != exited)
                Assert.Fail($"still running 30 s after SIG{signal}; output:\n{output}");
        }
        finally
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
        }
        await process.WaitForExitAsync(); // the output events are all raised

        var stderr = await error;
        var all = output + stderr;
        Assert.True(process.ExitCode == 130, $"exit code {process.ExitCode}\nstderr: {stderr}\nstdout: {output}");
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines is [var line] && line.StartsWith("Cancelled: ", StringComparison.Ordinal), $"stderr is not one 'Cancelled: ' line:\n{stderr}");
        Assert.DoesNotContain("   at ", all);
        Assert.DoesNotContain("Exception", all);
        Assert.False(File.Exists(Path.Combine(outFolder, "model.zip")));
        // On a loaded machine the signal can land just after a late progress line, when the next stage has begun; the
        // line then names that stage. Caught in the pretraining, as nearly always, nothing past it ran: no checkpoint.
        if (lines[0].Contains("pretraining", StringComparison.Ordinal))
        {
            Assert.Equal("Cancelled: the teacher's pretraining was running; there is nothing to resume from yet, and the next run starts again.", lines[0]);
            Assert.Empty(Directory.GetFiles(outFolder, "extraction-*.jsonl"));
            // Nor anything of the teacher's: its tokenizer's training files were left in teacher/tokenizer-training.
            Assert.False(Directory.Exists(Path.Combine(outFolder, "teacher")), string.Join(", ", Directory.GetFileSystemEntries(outFolder, "*", SearchOption.AllDirectories)));
        }
    }
}
