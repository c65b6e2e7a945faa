using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Tests.Infrastructure;
using static RetriKT.MLNet.Tests.Infrastructure.InvalidUtf8;
using RetriKT.Samples.Data;

namespace RetriKT.MLNet.Tests.Data;

/// <summary>
/// A task file with a byte that is not UTF-8 (a file saved as Latin-1 or Windows-1252) was read with U+FFFD in place of
/// the byte, and its rows learned on, chosen on and scored as if that were the text. Every task reader (an own task's
/// files, GLUE and LM-BFF .tsv splits, CoLA's headerless .tsv, FewGLUE .jsonl) now fails with one line naming the file,
/// the line and the byte, on real files with 0xFF on line 3.
/// </summary>
public sealed class TaskFileEncodingTests : IDisposable
{
    private readonly TempDir _folder = new("retrikt-encoding-");

    public void Dispose() => _folder.Dispose();

    private static void WriteUtf8(string path, params string[] lines)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllLines(path, lines);
    }

    private static readonly string[] OwnRows = ["text\tlabel", "a warm and funny film\tpos", "the caf\u00e9 scene is a mess\tneg", "dull\tneg"];

    [Fact]
    public void AnOwnTaskFileWithAByteThatIsNotUtf8FailsNamingTheFileAndLine()
    {
        var template = new TaskTemplate { Name = "Own", ClassificationFormat = "{text} It was{label}", Verbalizer = new Dictionary<string, string> { ["neg"] = " terrible", ["pos"] = " great" } };
        var (train, dev, test) = (Path.Combine(_folder.Path, "train.tsv"), Path.Combine(_folder.Path, "dev.tsv"), Path.Combine(_folder.Path, "test.tsv"));
        // Each of the three files is read through the same check.
        foreach (var bad in new[] { train, dev, test })
        {
            WriteUtf8(train, OwnRows);
            WriteUtf8(dev, "text\tlabel", "a fine cast\tpos", "a thin script\tneg");
            WriteUtf8(test, "text\tlabel", "worth seeing again\tpos", "too long by an hour\tneg");
            WriteWithInvalidByteOnLine3(bad, "text\tlabel", "a good one\tpos", "the caf\u00ff scene is a mess\tneg", "dull\tneg");
            var e = Assert.Throws<InvalidDataException>(() => LabelledTsv.LoadTask(train, dev, test, template, ["neg", "pos"]));
            Assert.Equal(Expected(bad), e.Message);
        }
        // The same rows as UTF-8 load as they always did, 'é' included.
        WriteUtf8(train, OwnRows);
        WriteUtf8(dev, "text\tlabel", "a fine cast\tpos", "a thin script\tneg");
        WriteUtf8(test, "text\tlabel", "worth seeing again\tpos", "too long by an hour\tneg");
        var task = LabelledTsv.LoadTask(train, dev, test, template, ["neg", "pos"]);
        Assert.Equal("the caf\u00e9 scene is a mess", task.Train[1].Text);
    }

    [Fact]
    public void EveryBenchmarkReaderFailsOnAByteThatIsNotUtf8NamingTheFileAndLine()
    {
        var root = _folder.Path;
        // LM-BFF: SST-2's few-shot splits and its test split (a GLUE dev file), one damaged at a time.
        var shots = Path.Combine(root, "SST-2", "k-shot", "16-13");
        string sst2Train = Path.Combine(shots, "train.tsv"), sst2Dev = Path.Combine(shots, "dev.tsv"), sst2Test = Path.Combine(root, "SST-2", "k-shot", "test.tsv");
        string[] sst2 = ["sentence\tlabel", "a warm and funny film\t1", "a thin script\t0", "dull\t0"];
        foreach (var bad in new[] { sst2Train, sst2Dev, sst2Test })
        {
            foreach (var file in new[] { sst2Train, sst2Dev, sst2Test }) WriteUtf8(file, sst2);
            WriteWithInvalidByteOnLine3(bad, "sentence\tlabel", "a warm and funny film\t1", "the caf\u00ff scene\t0");
            Assert.Equal(Expected(bad), Assert.Throws<InvalidDataException>(() => FewShotBenchmarks.Load(root, "SST-2", seed: 13)).Message);
        }
        // GLUE's full training split (a stand-in teacher's data), a pair task.
        var rteTrain = Path.Combine(root, "RTE", "train.tsv");
        WriteWithInvalidByteOnLine3(rteTrain, "index\tsentence1\tsentence2\tlabel", "0\tA man sleeps.\tA man rests.\tentailment", "1\tThe caf\u00ff opens.\tIt is shut.\tnot_entailment");
        Assert.Equal(Expected(rteTrain), Assert.Throws<InvalidDataException>(() => FewShotBenchmarks.LoadFullTrainingSplit(root, "RTE")).Message);
        // CoLA's files have no header row: their own branch of the reader.
        var colaShots = Path.Combine(root, "CoLA", "k-shot", "16-13", "train.tsv");
        WriteWithInvalidByteOnLine3(colaShots, "src\t1\t\tThe cat sat.", "src\t0\t*\tCat the sat.", "src\t1\t\tThe caf\u00ff is open.");
        Assert.Equal(Expected(colaShots), Assert.Throws<InvalidDataException>(() => FewShotBenchmarks.Load(root, "CoLA", seed: 13)).Message);
        // FewGLUE: CB's 32-shot training file, JSON lines.
        var cb = Path.Combine(root, "CB", "train32.jsonl");
        WriteWithInvalidByteOnLine3(cb,
            "{\"premise\": \"It rained.\", \"hypothesis\": \"It was wet.\", \"label\": \"entailment\"}",
            "{\"premise\": \"It was dry.\", \"hypothesis\": \"It rained.\", \"label\": \"contradiction\"}",
            "{\"premise\": \"The caf\u00ff was full.\", \"hypothesis\": \"It was busy.\", \"label\": \"entailment\"}");
        Assert.Equal(Expected(cb), Assert.Throws<InvalidDataException>(() => FewShotBenchmarks.Load(root, "CB")).Message);
    }
}
