using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.FirstRun;

/// <summary>
/// The Quickstart as a user runs it (a real process): every bad input gives one line on stderr that names the
/// option, file or line and what was expected, and exit code 2 (never a stack trace); --help describes the options
/// and exits 0. Each case stops before any training, so the whole class takes seconds.
/// </summary>
public class QuickstartInputTests
{
    private static string Teacher => SharedData.Path("models", "llama2c-stories260K", "stories260K.bin");

    [Fact]
    public void HelpDescribesTheOptionsAndExitsZero()
    {
        var (code, output, error) = Run(["--help"]);
        Assert.Equal(0, code);
        Assert.Equal("", error);
        foreach (var option in new[] { "--teacher", "--data", "--task", "--seed", "--out", "--ppo-steps", "--samples-per-label", "--unlabeled", "--unlabeled-rows", "--unlabeled-after-training", "--quick", "--fresh" })
            Assert.Contains(option, output);
        Assert.Contains("Hugging Face model directory or a llama2.c .bin", output);
    }

    [Theory]
    [InlineData("--bogus", "Unrecognized command or argument '--bogus'")]
    [InlineData("--seed x", "Cannot parse argument 'x' for option '--seed'")]
    [InlineData("--task RTE", "--task selects a task in --data, which is not given")]
    [InlineData("--seed 21", "--seed selects a task in --data, which is not given")]
    [InlineData("--samples-per-label 0", "--samples-per-label: expected a positive integer, found 0")]
    [InlineData("--unlabeled-rows 10", "--unlabeled-rows: sets how many sentences --unlabeled gives, which is not given.")]
    [InlineData("--unlabeled /nonexistent/reviews.txt", "--unlabeled: '/nonexistent/reviews.txt' does not exist.")]
    [InlineData("--unlabeled-after-training", "--unlabeled-after-training: adds the sentences of --unlabeled, which is not given.")]
    public void BadOptionsGiveOneLineAndExitTwo(string arguments, string expected) => AssertInputError(arguments.Split(' '), expected);

    [SharedDataFact]
    public void BadFilesAndFoldersGiveOneLineNamingThemAndExitTwo()
    {
        var work = Directory.CreateTempSubdirectory("retrikt-quickstart-input-").FullName;
        string Write(string relative, string content)
        {
            var path = Path.Combine(work, relative);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllText(path, content);
            return path;
        }
        var emptyFile = Write("empty.bin", "");
        var textFile = Write("notes.txt", "not a model");
        var tokenizer = SharedData.Path("models", "llama2c-stories260K", "tok512.bin");
        AssertInputError(["--teacher", emptyFile], $"--teacher '{emptyFile}' is not a loadable teacher checkpoint", "truncated");
        AssertInputError(["--teacher", textFile], $"--teacher '{textFile}' is not a loadable teacher checkpoint");
        AssertInputError(["--teacher", tokenizer], $"--teacher '{tokenizer}' is not a loadable teacher checkpoint");
        AssertInputError(["--teacher", Path.Combine(work, "missing.bin")], "does not exist");
        AssertInputError(["--out", emptyFile], $"--out: '{emptyFile}' is a file; expected a folder");
        var fewSentences = Write("reviews.txt", "A warm, funny and smart film about growing up. The plot drags in the middle hour.\n");
        AssertInputError(["--unlabeled", fewSentences], $"--unlabeled: StoreCorpus '{fewSentences}': 2 distinct sentences of 5-40 words, expected at least StoreCorpusRows = 32768.");
        AssertInputError(["--unlabeled", Directory.CreateDirectory(Path.Combine(work, "no-text")).FullName], "holds no .txt file");
        // After training, the sentences to add and the tuning sentences are both drawn, from different documents.
        AssertInputError(["--unlabeled", fewSentences, "--unlabeled-after-training", "--unlabeled-rows", "2"],
            $"--unlabeled: StoreCorpus '{fewSentences}': ", "expected StoreCorpusTuningRows = 2048 and StoreCorpusRows = 2.");
        AssertInputError(["--teacher", Teacher, "--data", SharedData.Path("data"), "--task", "MRPC", "--unlabeled", fewSentences],
            "--unlabeled gives single sentences; task MRPC takes sentence pairs.");

        var emptyFolder = Directory.CreateDirectory(Path.Combine(work, "empty-folder")).FullName;
        AssertInputError(["--teacher", Teacher, "--data", emptyFolder], "few-shot split for seed 13 not found");
        AssertInputError(["--teacher", Teacher, "--data", SharedData.Path("data"), "--seed", "7"], "few-shot split for seed 7 not found");

        // SST-2-shaped folders, each with one thing wrong.
        string Sst2(string name, string train, string test)
        {
            var root = Path.Combine(work, name);
            Write(Path.Combine(name, "SST-2", "k-shot", "16-13", "train.tsv"), train);
            Write(Path.Combine(name, "SST-2", "k-shot", "16-13", "dev.tsv"), "sentence\tlabel\ngood\t1\nbad\t0\n");
            Write(Path.Combine(name, "SST-2", "k-shot", "test.tsv"), test);
            return root;
        }
        const string good = "sentence\tlabel\na fine film\t1\na dull film\t0\n";
        var emptyTrain = Path.Combine(Sst2("empty-train", "", good), "SST-2", "k-shot", "16-13", "train.tsv");
        AssertInputError(["--teacher", Teacher, "--data", Path.Combine(work, "empty-train")], $"{emptyTrain}: the file is empty");
        AssertInputError(["--teacher", Teacher, "--data", Sst2("wrong-columns", "text\tstars\nnice\t5\n", good)],
            "line 1: column 'sentence' not found in header [text, stars]");
        AssertInputError(["--teacher", Teacher, "--data", Sst2("csv", "sentence,label\nnice,1\n", good)], "looks comma-separated; expected tab-separated");
        var wrongLabels = Sst2("wrong-labels", good, "sentence\tlabel\na fine film\tpositive\n");
        AssertInputError(["--teacher", Teacher, "--data", wrongLabels],
            $"{Path.Combine(wrongLabels, "SST-2", "k-shot", "test.tsv")} line 2: label 'positive' is not one of the task's labels [0, 1]");

        // FewGLUE JSONL with a broken second line.
        var jsonl = Write(Path.Combine("broken-jsonl", "CB", "train32.jsonl"), "{\"premise\":\"a\",\"hypothesis\":\"b\",\"label\":\"neutral\"}\n{\"premise\": \"a\n");
        AssertInputError(["--teacher", Teacher, "--data", Path.Combine(work, "broken-jsonl"), "--task", "CB"], $"{jsonl} line 2: not a JSON object");
    }

    private static void AssertInputError(string[] arguments, params string[] expected)
    {
        var (code, output, error) = Run(arguments);
        var lines = error.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(code == 2, $"{string.Join(' ', arguments)}: exit code {code}\nstderr: {error}\nstdout: {output}");
        Assert.True(lines.Length == 1, $"{string.Join(' ', arguments)}: expected one line on stderr, found {lines.Length}:\n{error}");
        Assert.StartsWith("error: ", lines[0]);
        foreach (var part in expected) Assert.Contains(part, lines[0]);
        Assert.DoesNotContain("   at ", output + error);
    }

    private static (int Code, string Output, string Error) Run(string[] arguments) => ChildProcess.RunApp("RetriKT.Quickstart.dll", arguments);
}
